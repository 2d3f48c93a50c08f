"""Pure rules over plain data: no I/O, no clock reads (time is passed in)."""
