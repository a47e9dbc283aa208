"""The training loops: the tokenizer and the DiT, one process or many (torchrun), resumable from checkpoints."""
