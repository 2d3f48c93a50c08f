"""The agent process: workspace, context and compaction, heartbeat loop, tools."""
