"""``python -m tlspin`` runs the command line."""

from tlspin._entry import main

main()
