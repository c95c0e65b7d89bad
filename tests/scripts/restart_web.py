"""A stand-in for `systemctl restart`: starts the test's "web" service again, detached.

Usage: restart_web.py SERVICE MARKER — the new process carries MARKER in its command line.
"""

import subprocess
import sys

service, marker = sys.argv[1], sys.argv[2]
subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(600)", f"{marker}-{service}"],
    stdin=subprocess.DEVNULL,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
    start_new_session=True,
)
print(f"restarted {service}")
