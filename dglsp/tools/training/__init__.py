"""The parts of `dglsp train`, each a stage the loop in `dglsp.tools.train` calls.

`examples`: FIM examples built as the server builds prompts, batched from the corpus or a shard. `objective`:
the loss of one step (DiffusionGemma's recipe) and the held-out loss. `schedule`: the learning rate and the
optimizer. `checkpoints`: resumable checkpoints, exported and shipped model directories, the training log.
"""
