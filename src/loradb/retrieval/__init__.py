"""From unlabeled data to ensemble weights: representations z and their spaces, privacy, targets,
retrieval keys, weighting methods, and the Arrow router."""
