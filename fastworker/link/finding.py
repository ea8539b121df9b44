"""Where a subworker's control plane is: the address it was given, or the
first one discovery finds whose address fits its TLS and secret settings
(no trio of its own beyond waiting between looks)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from actors.errors import ConfigError
from actors.frame import Framer
from actors.tls import resolve_tls
from fastworker.probe import discover_forever

if TYPE_CHECKING:
    from fastworker.link.actor import LinkOptions

__all__ = ["find_control_plane"]

log = logging.getLogger("fastworker.link")

#: Seconds before looking again for a control plane after passing one over
#: (its address's TLS or secret does not fit this worker's settings).
_REDISCOVER_DELAY = 5.0


async def find_control_plane(options: LinkOptions, framer_for: Callable[[str], Framer],
                             name: str) -> tuple[str, Framer]:
    """The control plane's address and the framer for it: the one given,
    else the first control plane found whose address fits this worker's
    TLS settings (a tls+tcp:// one needs them; with them, a plain one is
    passed over: a forged answer must not downgrade the link) and its
    secret settings (one on another host, with no secret set here, is
    passed over with the reason).

    Raises:
        ConfigError: a given address this worker cannot sign frames for.
    """
    if options.address:
        return options.address, framer_for(options.address)
    while True:
        address, announcement = await discover_forever(
            log=log, what=name, port=options.discovery_port)
        try:
            resolve_tls(address, options.tls, "dial")
            framer = framer_for(address)
        except ConfigError as error:
            log.error("%s: passing over the control plane %s found at %s, looking again "
                      "in %g s: %s", name, announcement.name, address, _REDISCOVER_DELAY, error)
            await trio.sleep(_REDISCOVER_DELAY)
            continue
        if announcement.secret_required and not framer.signed:
            log.error(
                "%s: the control plane at %s requires a shared secret; set "
                "FASTWORKER_SECRET or FASTWORKER_SECRET_FILE to the same one", name, address)
        log.info("%s: found control plane %s at %s", name, announcement.name, address)
        return address, framer
