"""CLAP (Contrastive Latent Action Pretraining) training, data and inference, ROS-free.

Nothing in this package imports rclpy or any ROS message package: the ROS wiring lives in
clap_policy_ros, which imports this package, never the other way round.
"""

__version__ = "0.1.0"
