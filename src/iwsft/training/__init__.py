"""The loss family, its kernels, the trainer and everything around a training run."""
