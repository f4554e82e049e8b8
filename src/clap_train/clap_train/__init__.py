"""CLAP (Contrastive Latent Action Pretraining) training, data and inference, ROS-free.

Nothing in this package imports rclpy or any ROS message package: the ROS wiring lives in
clap_policy_ros, which imports this package, never the other way round.

Importing it sets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment already sets it: torch's CPU
threads (OpenMP) otherwise spin while they wait for each other, and on a machine whose other cores
are busy a spinning thread holds the core that the thread it waits for needs. There, small-model
training ran up to 10x slower (bench/RESULTS.md, "Torch threads beside a busy machine"). OpenMP
reads the variable once, when torch is first imported, so it takes effect in every process that
imports this package before torch: the ``clap`` commands, the policy node, the tests.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
