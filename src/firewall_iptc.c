/* stub: being written */
#include "autoconfig.h"
extern int firewall_iptc_stub_;
int firewall_iptc_stub_;
