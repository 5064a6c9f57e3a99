"""The adapter database: LoraDB (records, checks, the compose pipeline), contributions, access
tokens, and the storage backends under store/."""
