"""Which programs take secrets on their command lines, and where: data for ``agent.redact.commands``."""

from __future__ import annotations

MYSQL = ("mysql", "mysqldump", "mysqladmin", "mysqlimport", "mysqlshow", "mysqlcheck", "mysqlpump",
         "mariadb", "mariadb-dump", "mariadb-admin", "mariadb-import", "mariadb-check")
LDAP = ("ldapsearch", "ldapadd", "ldapmodify", "ldapdelete", "ldapmodrdn", "ldappasswd", "ldapwhoami",
        "ldapcompare", "ldapexop")
MONGO = ("mongo", "mongosh", "mongodump", "mongorestore", "mongoexport", "mongoimport", "mongostat", "mongotop")
ORACLE = ("sqlplus", "rman", "expdp", "impdp", "exp", "imp", "sqlldr", "dgmgrl", "sql")

# program -> options whose value (attached "-pX" or the next word) is a secret
SECRET_OPTIONS: dict[str, tuple[str, ...]] = {
    "sshpass": ("-p",),
    "redis-cli": ("-a",),
    "sqlcmd": ("-P",),
    "bcp": ("-P",),
    "useradd": ("-p",),
    "usermod": ("-p",),
    "rdesktop": ("-p",),
    "plink": ("-pw",),
    "pscp": ("-pw",),
    "psftp": ("-pw",),
    "ssh-keygen": ("-N", "-P"),
    "zip": ("-P",),
    "unzip": ("-P",),
    "openssl": ("-k", "-pass", "-passin", "-passout", "-password"),
    "ipmitool": ("-P",),
    "mosquitto_pub": ("-P",),
    "mosquitto_sub": ("-P",),
    "ncftp": ("-p",),
    "ncftpput": ("-p",),
    "ncftpget": ("-p",),
    "keytool": ("-storepass", "-keypass", "-srcstorepass", "-deststorepass", "-srckeypass", "-destkeypass"),
    **{p: ("-w",) for p in LDAP},
    **{p: ("-p",) for p in MONGO},
}
# programs whose options are whole words: "-key" is not "-k" + "ey"
NO_ATTACHED = frozenset({"openssl", "keytool", "plink", "pscp", "psftp"})
# program -> the option ("-p") whose value is a secret only when attached ("-pS3cret"; "-p" alone prompts)
ATTACHED_ONLY = {**{p: "-p" for p in MYSQL}, "7z": "-p", "7za": "-p", "7zz": "-p", "rar": "-p", "unrar": "-p"}
USER_PASS_OPTIONS = {  # program -> (options, separator between user and password)
    "curl": (("-u", "--user", "-U", "--proxy-user"), ":"),
    "lftp": (("-u", "--user"), ","),
    "smbclient": (("-U", "--user"), "%"),
    "rpcclient": (("-U", "--user"), "%"),
    "smbcacls": (("-U", "--user"), "%"),
    "smbget": (("-U", "--user"), "%"),
    "smbmap": (("-U",), "%"),
    "winexe": (("-U", "--user"), "%"),
    "net": (("-U", "--user"), "%"),
    "wget": (("--user",), ":"),
}
# program -> "login" as one of its first words makes "-p" a password
LOGIN_SUBCOMMAND = ("docker", "podman", "nerdctl", "buildah", "skopeo", "helm", "oras", "crane", "az", "cf", "oc")
FREERDP = ("xfreerdp", "wlfreerdp", "sdl-freerdp", "xfreerdp3", "sdl-freerdp3", "wfreerdp")
# programs whose arguments come as "KEY VALUE" pairs without dashes (nmcli … wifi-sec.psk X, password X)
KEY_VALUE_PROGRAMS = ("nmcli", "redis-cli", "iwctl")
# program -> which positional argument after the program is the secret (1-based, negative from the end)
POSITIONAL = {
    "wpa_passphrase": -1,
}
OTHERS = ("htpasswd", "net", "mysqladmin", "vault", "aws", "rabbitmqctl", "smbclient", "lftp", "wpa_passphrase")

KNOWN_PROGRAMS = frozenset(
    [*SECRET_OPTIONS, *ATTACHED_ONLY, *USER_PASS_OPTIONS, *LOGIN_SUBCOMMAND, *FREERDP, *KEY_VALUE_PROGRAMS,
     *POSITIONAL, *ORACLE, *OTHERS]
)

# Programs that read a password from their standard input, and options that make a program do so.
STDIN_READERS = frozenset({"passwd", "chpasswd", "vncpasswd", "x11vnc", "smbpasswd", "cryptsetup", "kinit", "htpasswd"})
STDIN_OPTIONS = frozenset({"--password-stdin", "--stdin", "-S", "--passphrase-fd", "--with-token", "--passin-stdin"})
# "vault login -": the token comes on standard input
STDIN_SUBCOMMANDS = {"vault": ("login", "-")}
