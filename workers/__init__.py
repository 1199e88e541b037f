"""Worker side: one strategy per process, its services, paper execution and built-in strategies.

Everything here but ``workers.process`` is domain code and imports no zmq.
"""
