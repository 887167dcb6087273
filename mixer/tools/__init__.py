"""Tools around the product: ``record``, ``synth``, ``transcript``, ``chats`` (the directory listed, and the
``directory`` CSV import) and the ``loadtest`` package. Each adds its own `mixer` subcommand; tools may import
any stage.
"""
