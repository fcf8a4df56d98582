"""Tools the agent uses on a repository: read, search, repo map, edit, write, run tests, git."""
