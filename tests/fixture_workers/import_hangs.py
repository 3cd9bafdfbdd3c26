import signal

signal.signal(signal.SIGTERM, signal.SIG_IGN)  # and it will not go quietly either
while True:
    signal.pause()  # the import never returns
