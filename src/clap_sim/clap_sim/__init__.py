"""clap_sim: the ALOHA bimanual end-effector simulation that speaks the robot's topics.

ROS-free core: ``scene`` (MuJoCo/dm_control scene), ``tasks``, ``scripted`` (demonstrators),
``recorder`` (rosbag2), ``human_videos`` (mp4 + instructions). rclpy only in ``bridge`` (the
sim bridge node) and ``eval`` (closed-loop evaluation through the policy node).
"""
