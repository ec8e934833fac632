#!/usr/bin/python3
"""verify.py KEYS.json MSG...

Verifies the first DKIM-Signature of each MSG with python3-dkim (dkimpy),
an implementation independent of sluice's signer. Public keys come from
KEYS.json ({"sel._domainkey.example.com": "v=DKIM1; k=rsa; p=..."}) through
dnsfunc, so nothing touches the network. Prints "MSG ok" or "MSG fail:
reason" per message and exits 1 if any failed.
"""
import io
import json
import logging
import sys

import dkim


def main():
    with open(sys.argv[1]) as f:
        keys = {k.lower(): v for k, v in json.load(f).items()}

    def dnsfunc(name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode()
        rec = keys.get(name.rstrip('.').lower())
        return rec.encode() if rec is not None else None

    failed = 0
    for path in sys.argv[2:]:
        with open(path, 'rb') as f:
            msg = f.read()
        out = io.StringIO()
        logger = logging.getLogger(path)
        logger.handlers[:] = [logging.StreamHandler(out)]
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        try:
            ok = dkim.verify(msg, logger=logger, dnsfunc=dnsfunc, minkey=1024)
        except Exception as e:  # report, do not stop the batch
            ok = False
            out.write(repr(e))
        if ok:
            print(path, 'ok')
        else:
            failed += 1
            reason = [l for l in out.getvalue().splitlines() if 'mismatch' in l or 'rror' in l or 'ail' in l]
            print(path, 'fail:', ' | '.join(reason[-3:]) or out.getvalue()[-300:])
    sys.exit(1 if failed else 0)


main()
