def handle(event, context):
    """Handle one request.

    event.body is the request body (bytes); event.headers, event.method, event.path and
    event.query (a dict of lists) describe the rest. Return a dict with statusCode,
    body and optional headers, or just a str.
    """
    return {
        "statusCode": 200,
        "body": "Hello from Python! You said: " + event.body.decode("utf-8", "replace"),
        "headers": {"Content-Type": "text/plain; charset=utf-8"},
    }
