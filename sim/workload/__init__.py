"""Request sources: synthetic arrival processes, length samplers and trace replay."""
