#!/bin/bash
# linuxha notifier: POSTs each cluster event's JSON document to a webhook with curl.
#
# Install on every node (owned by root, not writable by others), e.g. as
# /etc/cluster/notify/webhook.sh, and list it in clconf.xml's <global>:
#
#   <notify program="/etc/cluster/notify/webhook.sh" timeout="15s"/>
#
# The URL is LINUXHA_WEBHOOK_URL from the environment, else the first line of
# /etc/cluster/notify/webhook.url (so the URL, which may carry a token, need not be in
# clconf.xml; keep that file mode 0600). curl's own limit stays below the notifier's timeout.
set -u

url="${LINUXHA_WEBHOOK_URL:-}"
url_file="${LINUXHA_WEBHOOK_URL_FILE:-/etc/cluster/notify/webhook.url}"
if [ -z "$url" ] && [ -r "$url_file" ]; then
    url="$(head -n 1 "$url_file")"
fi
if [ -z "$url" ]; then
    echo "no webhook URL: set LINUXHA_WEBHOOK_URL or write it to ${url_file}" >&2
    exit 1
fi
if ! command -v curl >/dev/null 2>&1; then
    echo "curl is not installed: cannot post ${LINUXHA_EVENT} to the webhook" >&2
    exit 1
fi

# The JSON document arrives on stdin and goes out as the request body.
exec curl --silent --show-error --fail \
    --max-time "${LINUXHA_WEBHOOK_TIMEOUT:-10}" \
    --header 'Content-Type: application/json' \
    --header "X-Linuxha-Event: ${LINUXHA_EVENT}" \
    --data-binary @- \
    "$url"
