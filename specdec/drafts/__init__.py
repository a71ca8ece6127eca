"""What strategies draft with: draft models, the EAGLE draft, Medusa heads, and the shipped ones."""
