"""Process control: running agents as OS processes in their own process groups."""
