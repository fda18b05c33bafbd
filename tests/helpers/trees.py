"""The shape of the `big_tree` fixture (a volume large enough for a scan to be caught mid-walk)."""

BIG_TREE_DIRECTORIES = 250
BIG_TREE_FILES_PER_DIRECTORY = 100
