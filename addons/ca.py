"""Create the interception CA ahead of the proxy, with its key readable by its owner only.

mitmproxy creates its CA the first time a proxy starts. llm-shadow creates it earlier, from
`llm-shadow ca` or before `llm-shadow proxy` starts, so a user can install the certificate
in clients before any traffic flows, and so the permissions are ours to guarantee: the
configuration directory is made 0700 when we create it, mitmproxy writes the key files under
a 0077 umask, and key files found with looser modes (copied from another machine, say) are
tightened to 0600. The layout is mitmproxy's own (`analysis.capture_setup.ca`), so
`mitmdump --set confdir=...` and `llm-shadow proxy --confdir ...` share one CA.
"""

import os
from pathlib import Path

from mitmproxy.certs import CertStore

from analysis.capture_setup.ca import CONF_BASENAME, CaFiles, loose_key_files

KEY_SIZE = 2048  # mitmproxy's default `key_size`


def ensure_ca(confdir: Path) -> tuple[CaFiles, list[Path]]:
    """Create the CA in `confdir` if it is missing; return its files and the key files
    whose permissions had to be tightened to 0600."""
    confdir = Path(confdir).expanduser()
    if not confdir.exists():
        confdir.mkdir(parents=True, mode=0o700)
    files = CaFiles(confdir)
    if not files.key_files[0].exists():
        CertStore.create_store(confdir, CONF_BASENAME, KEY_SIZE)  # writes the keys under umask 077
    tightened = []
    for path, _mode in loose_key_files(files):
        os.chmod(path, 0o600)
        tightened.append(path)
    return files, tightened
