#ifndef PIDFILE_H
#define PIDFILE_H
#endif
