"""Dataset -> training samples: the loader, the frame cache, mixing, normalisation, action spaces.

Reads LeRobot v3.0 datasets (whoever wrote them); never writes one. Pseudo-token sidecars of
human-video datasets are read (and written by ``clap label-videos``) here too.
"""
