"""Models, one file each: Act-VAE, VD-VAE, CLAP-NTP, the CLAP-RF flow head."""
