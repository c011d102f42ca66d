"""The training-thread side of stepstore: runs being recorded, their keys, journal and
writer threads, and the process hooks that finish them (see STYLE.md's tree)."""
