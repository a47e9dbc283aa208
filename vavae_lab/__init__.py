"""vavae_lab: VA-VAE and LightningDiT from a laptop CPU to multi-GPU ImageNet."""
