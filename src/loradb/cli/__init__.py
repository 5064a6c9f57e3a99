"""The `loradb` command."""
