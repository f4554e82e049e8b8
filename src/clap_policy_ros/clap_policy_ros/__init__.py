"""ROS 2 wiring of the CLAP policy. Nothing learned lives here: see clap_train."""
