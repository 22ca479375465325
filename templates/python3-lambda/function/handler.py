def handle(event, context):
    """Handle one invocation, exactly as on AWS Lambda.

    Args:
        event: an HTTP request arrives as an API Gateway HTTP API 2.0 event (the
            format of Lambda Function URLs: rawPath, headers, body, ...); a call to
            the Invoke API (POST /2015-03-31/functions/function/invocations) passes
            its body as the event.
        context: the Lambda context (aws_request_id, get_remaining_time_in_millis()).

    Returns an HTTP response ({"statusCode", "headers", "body"}) or any JSON value.
    Raising an exception is a function error: 502 to an HTTP client, 200 with
    X-Amz-Function-Error on the Invoke API.
    """
    if isinstance(event, dict) and "rawPath" in event:
        return {
            "statusCode": 200,
            "headers": {"content-type": "text/plain"},
            "body": "Hello from Python on Lambda! You said: " + (event.get("body") or ""),
        }
    return {"message": "Hello from Python on Lambda!", "event": event}
