"""The method's side of the trust boundary: what runs in the disposable child process, and the walls around it."""
