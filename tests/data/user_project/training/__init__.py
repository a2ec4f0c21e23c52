"""The project's own package, named like traindeck's engine on purpose: it must win here."""

OWNER = "user project"
