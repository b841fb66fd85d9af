"""`alc broker`: a locked-down production mosquitto for a club (PROTOCOL.md s9).

    alc broker init DIR --host NAME [--port 8883]
    alc broker add DIR --site S --controller C | --hub NAME
    alc broker check DIR
    alc broker cert DIR --host NAME --out OUTDIR

What DIR holds (`layout.Layout`): mosquitto.conf (TLS only, no anonymous
clients, the account's name as client id, 300 KiB packets, bounded queues,
persistence in DIR), the CA and the server certificate, mosquitto's password
file and ACL file, and `accounts/`, one password file per account to copy to the
controller or hub that uses it.

- `certs`: the CA and server certificates (`cryptography`);
- `conf`: mosquitto.conf, written and read back;
- `acl`: who may read and write which topics, written and read back;
- `passwd`: mosquitto's password file (hashed by `mosquitto_passwd`);
- `layout`: the files of DIR and how they are written;
- `check`: what a DIR's config allows, account by account;
- `main`: the command line.
"""
