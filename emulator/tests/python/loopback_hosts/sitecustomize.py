"""Map host names to loopback inside this Python process (and its children), never in /etc/hosts.

Python imports ``sitecustomize`` at start-up from any directory on ``sys.path``; a test puts this
directory on ``PYTHONPATH`` and sets ``ACA_LAB_HOSTS`` to a comma-separated list of
``host:port=ip:port`` entries, e.g.::

    ACA_LAB_HOSTS="sb-lab.servicebus.windows.net:443=127.0.0.1:40123,sb-lab.servicebus.windows.net:5671=127.0.0.1:40124"

Every ``socket.getaddrinfo`` for a listed (host, port) then answers with the mapped loopback address,
so an unchanged client (the SDK's admin client dialling ``https://{host}:443``, an AMQP client on 5671,
a Celery worker started as a subprocess) reaches the emulator while TLS still checks the certificate
against the original host name. A port of ``*`` maps every port of that host to the same port on the
target ip. Unlisted names resolve as usual.
"""

import os
import socket

_real_getaddrinfo = socket.getaddrinfo


def _parse(spec):
    table = {}
    for entry in filter(None, (part.strip() for part in spec.split(","))):
        source, _, target = entry.partition("=")
        host, _, port = source.rpartition(":")
        ip, _, target_port = target.rpartition(":")
        if not host or not ip or not port or not target_port:
            raise ValueError(
                f"ACA_LAB_HOSTS entry {entry!r} is not host:port=ip:port (port may be '*' on both sides)"
            )
        table[(host.lower(), port)] = (ip, target_port)
    return table


_TABLE = _parse(os.environ.get("ACA_LAB_HOSTS", ""))


def _mapped_getaddrinfo(host, port, *args, **kwargs):
    if isinstance(host, bytes):
        name = host.decode("ascii", "replace")
    else:
        name = host or ""
    key = (name.lower(), str(port))
    target = _TABLE.get(key)
    if target is None and (name.lower(), "*") in _TABLE:
        ip, _ = _TABLE[(name.lower(), "*")]
        target = (ip, str(port))
    if target is None:
        return _real_getaddrinfo(host, port, *args, **kwargs)
    ip, target_port = target
    return _real_getaddrinfo(ip, int(target_port), *args, **kwargs)


if _TABLE:
    socket.getaddrinfo = _mapped_getaddrinfo
