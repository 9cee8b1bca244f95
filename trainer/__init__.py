"""The offline trainer: builds a corpus, trains ESPCN or SRCNN, evaluates against bicubic.

It imports the shared image pipeline and the networks, never the web service.
"""
