"""The Housley mode's attacks need tlslite-ng (mls-transport[housley]); a venv without it (CI's run of the hostile
suite on the lowest pinned aioquic, which installs only the test extra) leaves them out. The main run has it."""

import importlib.util

collect_ignore = [] if importlib.util.find_spec("tlslite") else ["test_housley.py", "test_housley_attacks.py"]
