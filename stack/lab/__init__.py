"""``stack lab``: networks of hosts and routers with this stack inside, and
lessons that make one behaviour of TCP/IP happen in them.

* :mod:`stack.lab.topology`: the topology file (TOML) and its checks;
* :mod:`stack.lab.build`: Mininet, and :class:`StackHost`, the node class
  that runs this stack as a Mininet host;
* :mod:`stack.lab.lab`: a running lab and what a scenario can do in it;
* :mod:`stack.lab.evidence`: traces and captures read back;
* :mod:`stack.lab.lessons`: the lessons;
* :mod:`stack.lab.command`: the command line.
"""
