<?php
// One request: an ordinary PHP page, run by a warm php-cgi worker.
// The request body is php://input; headers are $_SERVER["HTTP_*"].
header("Content-Type: application/json");
$body = file_get_contents("php://input");
echo json_encode([
    "method" => $_SERVER["REQUEST_METHOD"],
    "path" => $_SERVER["PATH_INFO"] ?? "/",
    "query" => $_GET,
    "body" => $body,
]), "\n";
