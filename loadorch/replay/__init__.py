"""Replays of recorded spikes: import (sources, mix, compaction) and fidelity to the recording."""
