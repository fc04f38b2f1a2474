"""What a case measures besides accuracy: FLOPs (dense, by density, structured), physically shrunk models, latency."""
