"""Files and sources every layer reads or writes: atomic writes and hashes (files), pinned pip
downloads (pypi), dataset files of texts, labels and pairs (data)."""
