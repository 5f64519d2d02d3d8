"""The tuning-log workflow: `sparsec tune` (tuner.py) measures candidates for each distinct kernel
(tasks.py, search.py, metaschedule.py, measure.py) into a log (records.py); `compile --tuning-log`
applies its best records (apply.py). The logs kept for the bundled models sit beside this code."""
