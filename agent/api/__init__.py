"""The local API: its wire format (``protocol``), its blocking client (``client``) and who is on
the other end of the socket (``peercred``). The server is ``agent.service``; the CLI, the tray
and ssh-authorize are clients."""
