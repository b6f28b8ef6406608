"""Example nfcore model plugins (see nets.py and the README's "Your own network")."""
