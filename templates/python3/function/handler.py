def handle(req):
    """Handle one request.

    Args:
        req (str): the request body

    Returns the response body (printed to stdout). Raising an exception makes the
    process exit non-zero, which fwatchdog answers with a 500.
    """
    return "Hello from Python! You said: " + req
