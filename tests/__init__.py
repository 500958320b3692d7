"""The test suite. Importing it (pytest does, before any test module or numpy) gives every
test process and the pipelines they start one BLAS/OpenMP thread unless the environment
says otherwise: on the 2-core CI and dev machines, threaded fits (hist gradient boosting)
oversubscribe the cores (one export test: 35 s with 2 threads, 2 s with one; README, Tests).
"""

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")
