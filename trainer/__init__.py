"""The offline trainer: builds a corpus, trains ESPCN or SRCNN, evaluates against bicubic.

It imports the shared image pipeline and the networks, never the web service. ``models`` is
imported first, before any module here imports torch: it sets OpenMP's wait policy, which
torch's runtime reads once, when it loads (see ``models/__init__.py``).
"""

import models  # noqa: F401
