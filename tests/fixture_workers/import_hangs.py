import signal
import time

signal.signal(signal.SIGTERM, signal.SIG_IGN)  # and it will not go quietly either
time.sleep(3600)
