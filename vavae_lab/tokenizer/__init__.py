"""The tokenizer (VA-VAE): the autoencoder, its losses (pixels, KL, GAN, VF), the models it aligns to, the official one."""
