#ifndef LISTENER_H
#define LISTENER_H
#endif
