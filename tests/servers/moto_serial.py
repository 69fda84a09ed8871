"""moto_server, one request at a time: ``python moto_serial.py HOST PORT``.

The server lives in :mod:`engines.devservers.moto_serial` (``engines dev servers`` runs
it too); this path stays for the scripts that start it by file name.
"""

from __future__ import annotations

from engines.devservers.moto_serial import main

if __name__ == "__main__":
    main()
