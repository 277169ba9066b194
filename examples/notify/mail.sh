#!/bin/bash
# linuxha notifier: mails each cluster event through sendmail.
#
# Install on every node (owned by root, not writable by others), e.g. as
# /etc/cluster/notify/mail.sh, and list it in clconf.xml's <global>:
#
#   <notify program="/etc/cluster/notify/mail.sh" timeout="20s"
#           events="node_down,isolated,app_failed,app_moved,takeover_held_back,fence_result,split_brain"/>
#
# The recipient is LINUXHA_MAIL_TO from the environment, else root. Without sendmail the
# event is only logged (cldaemon's log) and the notifier succeeds: a node without a mail
# system is not a failing notifier.
set -u

to="${LINUXHA_MAIL_TO:-root}"
sendmail=""
for candidate in /usr/sbin/sendmail /usr/lib/sendmail; do
    if [ -x "$candidate" ]; then
        sendmail="$candidate"
        break
    fi
done

# The JSON document of the event, from stdin.
document="$(cat)"
subject="[linuxha ${LINUXHA_CLUSTER}] ${LINUXHA_EVENT} on ${LINUXHA_NODE}"
if [ -n "${LINUXHA_APPLICATION:-}" ]; then
    subject="${subject}: ${LINUXHA_APPLICATION}"
fi
if [ -n "${LINUXHA_SUBJECT_NODE:-}" ]; then
    subject="${subject} (node ${LINUXHA_SUBJECT_NODE})"
fi

if [ -z "$sendmail" ]; then
    echo "sendmail is not installed: not mailing \"${subject}\" to ${to}"
    exit 0
fi

{
    printf 'To: %s\n' "$to"
    printf 'Subject: %s\n' "$subject"
    printf 'Content-Type: text/plain; charset=utf-8\n\n'
    printf 'Event:       %s (#%s)\n' "$LINUXHA_EVENT" "$LINUXHA_SEQ"
    printf 'Time:        %s\n' "$LINUXHA_TIME"
    printf 'Cluster:     %s\n' "$LINUXHA_CLUSTER"
    printf 'Seen on:     %s\n' "$LINUXHA_NODE"
    [ -n "${LINUXHA_SUBJECT_NODE:-}" ] && printf 'Node:        %s\n' "$LINUXHA_SUBJECT_NODE"
    [ -n "${LINUXHA_APPLICATION:-}" ] && printf 'Application: %s\n' "$LINUXHA_APPLICATION"
    [ -n "${LINUXHA_REASON:-}" ] && printf 'Reason:      %s\n' "$LINUXHA_REASON"
    [ "${LINUXHA_DROPPED:-0}" != 0 ] && printf 'Dropped:     %s earlier events (queue full)\n' "$LINUXHA_DROPPED"
    printf '\n%s\n' "$document"
} | "$sendmail" -t -oi
