"""The lguest Launcher: loads a Guest, lays out its memory and runs it."""
